//! Task arithmetic (to be written)
