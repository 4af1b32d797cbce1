//! The process itself: the build it runs, its log sink, its service manager, its memory.
//! Nothing here knows DNS, zones or services.

pub mod build_info;
pub mod logging;
pub mod memory;
pub mod output;
pub mod systemd;
