"""Data: decoding, augmentation, collate, loaders over artifacts."""
