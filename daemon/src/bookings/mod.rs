//! Bookings as the API accepts them: the body of `POST /v1/bookings` and
//! the rules it must meet (`model`, pure), and the task that closes them
//! when their window ends (`windows`). Storing them is the ledger's; the
//! handlers are in `http::bookings`.

pub mod model;
pub mod windows;
