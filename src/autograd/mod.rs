//! Autograd tape (to be written)
