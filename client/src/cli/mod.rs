//! The `sealpost` command line: argument parsing, input, output and progress bars over the
//! `sealpost_client` library.

pub mod args;
pub mod bars;
pub mod devices;
pub mod input;
pub mod keys;
pub mod mail;
pub mod manage;
pub mod output;
pub mod run;
pub mod tty;
