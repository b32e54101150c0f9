"""The switches for ARM behaviours Azure does not document (docs/emulator.md, "Undocumented
behaviours"): the product is tested under each alternative instead of the emulator picking one.

* ``model_applied``: what ``latestModelApplied`` compares. "content" (default): an instance is latest
  when its applied model equals the scale set model (image id plus each extension's
  publisher/type/typeHandlerVersion/settings/protectedSettings/forceUpdateTag), so writing the old
  model back makes untouched instances latest again. "version": every model write bumps a counter
  and only instances upgraded since the last write are latest.
* ``upgrade_while_updating``: manualupgrade naming an instance that is already Updating is accepted
  with no second apply ("accept", default) or refused with 409 OperationNotAllowed ("conflict").
* ``key_vault_reference_in_answers``: whether GET answers carry an extension's
  protectedSettingsFromKeyVault (a secret's URL and its vault's id, not the secret). The spec marks it
  neither readOnly nor secret, and Terraform's azurerm provider reads it back from GET
  (hashicorp/terraform-provider-azurerm, internal/services/compute/virtual_machine_scale_set_extension_resource.go)
  while it keeps protectedSettings from its own state because ARM does not return them. Default: returned.
* ``flexible_model_applied``: whether a Flexible scale set's VMs say if they run the scale set's latest
  model. "absent" (default): no; the REST shape of a VM (``VirtualMachineProperties``, ComputeRP.json
  2026-04-01) has no ``latestModelApplied``, only a Uniform scale set VM's has. "in_vm_list": the
  ``VirtualMachines_List`` items carry ``properties.latestModelApplied`` as a scale set VM does (outside
  the spec; the alternative if Azure adds it). The product must be right under both.
"""

from __future__ import annotations

from dataclasses import dataclass

from emulator.arm.model import Instance, ScaleSet

MODEL_APPLIED = ("content", "version")
UPGRADE_WHILE_UPDATING = ("accept", "conflict")
FLEXIBLE_MODEL_APPLIED = ("absent", "in_vm_list")


@dataclass
class Semantics:
    model_applied: str = "content"
    upgrade_while_updating: str = "accept"
    key_vault_reference_in_answers: bool = True
    flexible_model_applied: str = "absent"

    def choose(
        self,
        *,
        model_applied: str | None = None,
        upgrade_while_updating: str | None = None,
        flexible_model_applied: str | None = None,
    ) -> None:
        """Set any switch (None: unchanged); an unknown alternative is a ValueError."""
        if flexible_model_applied is not None:
            if flexible_model_applied not in FLEXIBLE_MODEL_APPLIED:
                raise ValueError(
                    f"flexible_model_applied must be 'absent' or 'in_vm_list', not {flexible_model_applied!r}"
                )
            self.flexible_model_applied = flexible_model_applied
        if model_applied is not None:
            if model_applied not in MODEL_APPLIED:
                raise ValueError(f"model_applied must be 'content' or 'version', not {model_applied!r}")
            self.model_applied = model_applied
        if upgrade_while_updating is not None:
            if upgrade_while_updating not in UPGRADE_WHILE_UPDATING:
                raise ValueError(
                    f"upgrade_while_updating must be 'accept' or 'conflict', not {upgrade_while_updating!r}"
                )
            self.upgrade_while_updating = upgrade_while_updating

    def latest(self, scale_set: ScaleSet, inst: Instance) -> bool:
        """``latestModelApplied`` under the chosen ``model_applied``."""
        if self.model_applied == "version":
            return inst.applied.version == scale_set.model.version
        return inst.applied.key() == scale_set.model.key()
