//! Tiny clip checkpoint writer (lands with the family).
