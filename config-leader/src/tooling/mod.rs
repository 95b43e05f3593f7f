//! Platform tooling, for operators rather than followers: `init` (a new platform from our templates or a
//! Pryv.io release), `package` (one archive per machine) and the install guide's `scripts` they carry.

pub mod init;
pub mod package;
pub mod scripts;
