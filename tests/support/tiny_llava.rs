//! Tiny llava checkpoint writer (lands with the family).
