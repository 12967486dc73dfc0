"""Data contract, adapters, synthetic generator, warehouse and splits."""
