"""The plugin module named by the ``recsys`` entry point."""

import recsys

#: The engine API range this plugin is written against (checked when the plugin loads):
#: 1.3 added the CTR protocol (CTRDataModule, CTRModule).
RECSYS_API = ">=1.3,<2"


@recsys.hookimpl
def register_models(register):
    from recsys_plora.crm import DIN
    from recsys_plora.model import RecLoRA

    register(DIN)
    register(RecLoRA)
