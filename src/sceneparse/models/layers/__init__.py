"""Reusable layers without a task of their own (conv-BN-activation, in-network upsampling)."""
from .conv import AtrousConv2d, ConvNormAct, SeparableConvNormAct
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
    "AtrousConv2d",
    "BedOfNailsUnpool",
    "ConvNormAct",
    "Interpolate",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "NearestUnpool",
    "SeparableConvNormAct",
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
