//! Shared helpers of the in-VM programs.
