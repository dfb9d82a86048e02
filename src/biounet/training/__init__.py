"""The training run: configuration, augmentation (elastic deformation), the weighted loss, the loop, its report."""
