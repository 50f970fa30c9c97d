//! Tiny flux checkpoint writer (lands with the family).
