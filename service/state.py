"""What one API process holds: settings, the service database, Optuna's storage."""

from __future__ import annotations

from dataclasses import dataclass, field

from optuna.storages import RDBStorage

from service.summary import SummaryCache
from service.token_cache import TokenCache
from storage.db import PING_AFTER_IDLE_S, Database
from storage.optuna_store import OptunaReader, open_optuna_storage
from storage.settings import Settings
from storage.validation import ValidationPolicy


@dataclass
class AppState:
    settings: Settings
    db: Database
    optuna: RDBStorage
    reader: OptunaReader
    policy: ValidationPolicy
    tokens: TokenCache = field(default_factory=TokenCache)
    summaries: SummaryCache = field(default_factory=SummaryCache)

    @classmethod
    def open(cls, settings: Settings, *, ping_idle_s: float = PING_AFTER_IDLE_S) -> AppState:
        """Both databases, their pooled connections pinged when idle for ``ping_idle_s``."""
        optuna_storage = open_optuna_storage(settings.optuna_storage, ping_idle_s=ping_idle_s)
        policy = ValidationPolicy(
            allowed_task_modules=settings.allowed_task_module_prefixes,
            dataset_roots=settings.dataset_root_paths,
        )
        return cls(
            settings,
            Database(settings.database_url, ping_idle_s=ping_idle_s),
            optuna_storage,
            OptunaReader(optuna_storage),
            policy,
        )

    def close(self) -> None:
        self.db.dispose()
        self.optuna.engine.dispose()

    @property
    def auth_enabled(self) -> bool:
        return self.settings.admin_token is not None
