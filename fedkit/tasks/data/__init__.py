"""Raw datasets for the built-in tasks: loaders and generators returning tensors."""
