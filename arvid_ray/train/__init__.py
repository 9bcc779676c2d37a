"""Training: ``step`` (optimizer, LR, one step), ``loop`` (cadence, single process), ``worker`` (Ray Train
rank), ``checkpoint`` (safe save/load), ``cost`` (hours, dollars, FLOPs, MFU). Import the submodules
directly; this package imports nothing heavy so ``import arvid_ray.train`` stays cheap."""
