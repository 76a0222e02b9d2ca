//! Host bindings generated from the WIT the pinned spin-sdk imports
//! (`runtime/wit`), so guest and host cannot drift apart silently.

wasmtime::component::bindgen!({
    path: "wit",
    world: "lvd:host/host",
    imports: { default: async | trappable },
    trappable_error_type: {
        "spin:postgres/postgres@4.2.0.error" => spin::postgres::postgres::Error,
        "spin:key-value/key-value@3.0.0.error" => spin::key_value::key_value::Error,
        "spin:redis/redis@3.0.0.error" => spin::redis::redis::Error,
        "spin:variables/variables@3.0.0.error" => spin::variables::variables::Error,
        "fermyon:spin/variables@2.0.0.error" => fermyon::spin::variables::Error,
        "fermyon:spin/key-value@2.0.0.error" => fermyon::spin::key_value::Error,
        "fermyon:spin/redis@2.0.0.error" => fermyon::spin::redis::Error,
    },
});
