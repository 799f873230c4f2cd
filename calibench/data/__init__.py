"""Datasets, OOD sets and the device-resident input pipeline."""
