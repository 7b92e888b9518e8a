/** The Parquet-on-S3 sink (`s3_parquet`): pure encoder, keys and rolling policy; S3 and manifest I/O. */
export * from "./encoder.ts";
export * from "./encode-pool.ts";
export * from "./footer.ts";
export * from "./keys.ts";
export * from "./roller.ts";
export * from "./location.ts";
export * from "./s3-errors.ts";
export * from "./uploader.ts";
export * from "./manifest.ts";
export * from "./inspect.ts";
export * from "./verify.ts";
