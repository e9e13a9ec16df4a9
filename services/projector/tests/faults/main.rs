//! Faults, abuse and load against the whole system (real Postgres, Redis and
//! the three binaries). The oracle: after every fault, once the projector has
//! caught up, the Redis read model equals what Postgres says.

mod crash;
mod outages;
mod schema_fuzz;
mod shutdown;
mod soak;
