//! WebAssembly destinations: see the plugin runtime in crate::plugin.
