//! Host bindings generated from the plugin contract (`wit/`, world `plugin`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    exports: { default: async },
});
