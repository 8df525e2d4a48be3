"""llm-observatory: the migration of LLM interaction logs from SQL Server to Azure Data Lake."""

from llm_observatory.native_memory import before_native_libraries_load

# Before any module imports deltalake: its allocator reads its settings once, at its first use.
before_native_libraries_load()
