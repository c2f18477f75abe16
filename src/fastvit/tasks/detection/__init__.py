"""Object detection and instance segmentation: FastViT + FPN + torchvision Mask R-CNN."""
