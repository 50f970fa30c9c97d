//! Tiny sd35 checkpoint writer (lands with the family).
