"""Port's port-app-config mappings: models, the jq engine and the entity processor."""

from ocean_hook.mapping.models import MappingFlags, PortAppConfig, ResourceConfig, load_port_app_config

__all__ = ["MappingFlags", "PortAppConfig", "ResourceConfig", "load_port_app_config"]
