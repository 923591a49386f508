"""Architecture facts of models (`ModelSpec`) and GPUs (`GpuSpec`)."""
