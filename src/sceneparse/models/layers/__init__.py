"""Reusable layers without a task of their own (in-network upsampling)."""
from .upsampling import (
    BedOfNailsUnpool,
    Interpolate,
    MaxPoolWithIndices,
    MaxUnpool,
    NearestUnpool,
    TransposedConv2d,
    bed_of_nails_unpool,
    bilinear_kernel,
    conv1d_matrix,
    interpolate,
    max_pool_with_indices,
    max_unpool,
    nearest_unpool,
    transposed_conv_output_size,
)

__all__ = [
    "BedOfNailsUnpool",
    "Interpolate",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "NearestUnpool",
    "TransposedConv2d",
    "bed_of_nails_unpool",
    "bilinear_kernel",
    "conv1d_matrix",
    "interpolate",
    "max_pool_with_indices",
    "max_unpool",
    "nearest_unpool",
    "transposed_conv_output_size",
]
