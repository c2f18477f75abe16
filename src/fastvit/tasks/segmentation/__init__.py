"""Semantic segmentation: FastViT + Semantic FPN on ADE20K-layout data."""
