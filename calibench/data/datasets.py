"""Built-in in-distribution datasets. Importing this module registers them."""
