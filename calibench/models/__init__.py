"""Built-in backbones. Importing this package registers each of them."""
