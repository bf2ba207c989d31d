"""The stages `mto` runs, one module each (train, eval, ...), each a Hydra task function `main(cfg)`
composed of the named steps in `mto.stages.steps`."""
