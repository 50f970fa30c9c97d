//! Logging into the host's log, tagged with the plugin's name.

pub use crate::bindings::lantern::ai::logging::Level;
use crate::bindings::lantern::ai::logging::log as host_log;

pub fn log(level: Level, message: &str) {
    host_log(level, message);
}

pub fn info(message: &str) {
    host_log(Level::Info, message);
}

pub fn warn(message: &str) {
    host_log(Level::Warn, message);
}

pub fn debug(message: &str) {
    host_log(Level::Debug, message);
}
