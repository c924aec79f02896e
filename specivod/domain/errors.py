"""Typed errors. Each layer raises these so callers can report a failure without knowing which
library produced it."""


class SpecivodError(Exception):
    """Base of every error specivod reports to an operator."""


class ConfigError(SpecivodError):
    """The configuration is invalid; the message names the file, the key and the reason."""


class PolicyError(SpecivodError):
    """A version range or version string cannot be understood."""


class RegistryError(SpecivodError):
    """The container registry could not be read."""


class RegistryUnavailable(RegistryError):
    """Connection refused, reset, DNS failure, or 5xx answers after every retry."""


class RegistryTimeout(RegistryError):
    """The registry did not answer within the configured timeout."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or no credentials were available."""


class RegistryNotFound(RegistryError):
    """The repository or tag does not exist."""


class RegistryRateLimited(RegistryError):
    """The registry kept answering 429 Too Many Requests."""


class RegistryProtocolError(RegistryError):
    """The registry answered something that is not the distribution API (bad or truncated JSON,
    a missing header)."""


class DeploymentError(SpecivodError):
    """docker compose or the Docker Engine failed."""


class BackupError(SpecivodError):
    """A backup or restore failed; no backup is marked valid after this."""


class JournalError(SpecivodError):
    """The upgrade journal cannot be read or written."""


class LockedError(SpecivodError):
    """Another upgrade holds the host-wide lock."""
