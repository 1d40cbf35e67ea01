"""Data preparation: one record schema, converters, images, mixtures, phantoms, cold-start data."""
