"""Stage two: timm classifiers trained on the CQT image store with accelerate (python -m train)."""
