//! Readers that turn telemetry files into canonical `Flow`s and the inventory into
//! `Device`s, plus the bundled fleet simulator that writes such files.
//!
//! Readers stream: a flow is handed to the caller's closure and forgotten, so memory
//! does not grow with the size of a file. A malformed line is reported with its file and
//! line number, skipped and counted; only problems that make a whole file unreadable
//! (no `#fields` header, an empty or truncated file, a broken inventory) are errors.
//! This module depends only on `model`.
