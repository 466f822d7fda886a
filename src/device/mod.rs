//! Devices: CPU, and CUDA with two runtimes (real driver through cudarc, host emulator).
