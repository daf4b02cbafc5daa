#![forbid(unsafe_code)]

/// glibc's allocator spent a fifth of the service's CPU time under load (many threads
/// allocating and freeing small buffers); mimalloc keeps that cost local to each thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    waggle::cli::run(waggle::cli::parse()?).await
}
