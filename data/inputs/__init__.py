"""The torch pieces that training and inference share: reading the store in blocks, turning
stored arrays into model input, and the deterministic views behind augmentation and TTA."""
