"""The Hydra config tree (a package so that Hydra finds it as pkg://experiments.configs)."""
