//! The WebAssembly plugin runtime.
