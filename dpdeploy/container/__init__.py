"""Container images: engines (docker, buildah, podman), the Dockerfile's rendered args, base image, build context."""
