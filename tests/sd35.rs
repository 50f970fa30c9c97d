//! The sd35 family on its tiny checkpoint (placeholder: the family's tests land with it).

mod support;
