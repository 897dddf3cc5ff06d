"""Put this directory first on PYTHONPATH to make `import lz4` fail: a screener that cannot read lz4 batches."""

raise ImportError("lz4 is hidden by tests/data/hidden_codecs (a screener without the codec's library)")
