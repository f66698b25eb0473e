"""recsys-plora: RecLoRA (Zhu et al., 2024), personalized LoRA for LLM-based CTR prediction."""

from recsys_plora.crm import DIN
from recsys_plora.lora import GateInput, PersonalizedLoRALinear, add_personalized_lora
from recsys_plora.model import RecLoRA

__all__ = ["DIN", "GateInput", "PersonalizedLoRALinear", "RecLoRA", "add_personalized_lora"]
