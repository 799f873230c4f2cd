"""Built-in out-of-distribution sets. Importing this module registers them."""
