"""Media uploads (Langfuse's media API): the SDKs replace inline media with references and upload the
bytes here, through a presigned S3 PUT or tracehouse's own signed upload route."""
