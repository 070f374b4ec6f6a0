//! A plugin built for an ABI version this host does not speak: the host must refuse it
//! after reading nothing but the version.

use connector_sdk::abi::{ConnectorDescriptor, DoneFn, KIND_SINK, RawSlice};

/// The ABI version this library claims.
pub const DECLARED_ABI_VERSION: u32 = 999;

static DESCRIPTOR: ConnectorDescriptor = ConnectorDescriptor {
    abi_version: DECLARED_ABI_VERSION,
    kind: KIND_SINK,
    name: RawSlice::new(b"wrong-abi"),
    version: RawSlice::new(b"0.0.0"),
    sdk_version: RawSlice::new(b"0.0.0"),
    sink: std::ptr::null(),
    source: std::ptr::null(),
    max_unsettled_batches: 0,
    config_schema: no_schema,
    validate_config: never_valid,
};

// Never called: the host stops at the version.
unsafe extern "C" fn no_schema() -> RawSlice {
    RawSlice::EMPTY
}

unsafe extern "C" fn never_valid(_: RawSlice, _: DoneFn, _: *mut std::ffi::c_void) {}

/// The descriptor symbol, named as the export macros would name it.
#[unsafe(export_name = "iggy_connector_descriptor_wrong_abi_plugin")]
pub extern "C" fn descriptor() -> *const ConnectorDescriptor {
    &DESCRIPTOR
}
