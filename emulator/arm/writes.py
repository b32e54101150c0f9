"""Model writes: PUT/PATCH of a scale set and PUT/PATCH of its extensions.

Each write is throttled (``budgets.Throttle``), checked for linked authorization of its image
(``access.ImageAccess``), bumps the model's version and answers as a finished long-running
operation (``Azure-AsyncOperation``/``Location`` whose final body is the written resource).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulator.arm.model import JSON, ArmError, Extension, Model, Operation, ScaleSet, extension_from_body
from emulator.arm.routes import Answer, Request

if TYPE_CHECKING:
    from emulator.arm.emulator import ArmEmulator


class ModelWrites:
    def __init__(self, emu: ArmEmulator, lro_headers: Callable[[Operation], dict[str, str]]) -> None:
        self._emu = emu
        self._lro_headers = lro_headers

    def _written(self, scale_set: ScaleSet, status: int, render: Callable[[], JSON]) -> Answer:
        """The answer to a model write: an operation already ended, whose final body is ``render()``."""
        op = self._emu.operations.new("model", scale_set, set())
        op.result = render
        return status, self._lro_headers(op), render()

    def _vmss_body(self, scale_set: ScaleSet) -> Callable[[], JSON]:
        return lambda: self._emu.api.scale_set_json(scale_set)

    def put_vmss(self, rg: str, name: str, body: JSON) -> Answer:
        emu = self._emu
        emu.access.check_linked_image(emu.vmss_id(rg, name), body)
        if (rg, name) in emu.fleet:
            scale_set = emu.fleet.get(rg, name)
            emu.spend_budget(scale_set)
            self.apply_model_patch(scale_set, body, replace=True)
            return self._written(scale_set, 200, self._vmss_body(scale_set))
        # Create through ARM: a synthetic scale set with sku.capacity instances.
        props = body.get("properties") or {}
        vmp = props.get("virtualMachineProfile") or {}
        mode = str(props.get("orchestrationMode") or "Uniform")
        policy = str((props.get("upgradePolicy") or {}).get("mode") or "Manual")
        if mode.lower() == "flexible" and policy.lower() == "automatic":
            # MicrosoftDocs/azure-docs articles/virtual-machine-scale-sets/virtual-machine-scale-sets-upgrade-policy.md:
            # "Automatic upgrade policy is only available for Virtual Machine Scale Sets with Uniform Orchestration."
            raise ArmError(
                400,
                "InvalidParameter",
                "Automatic upgrade policy is only available for Virtual Machine Scale Sets with Uniform orchestration.",
            )
        created = emu.create_scale_set(
            rg,
            name,
            int((body.get("sku") or {}).get("capacity") or 0),
            location=body.get("location") or "westeurope",
            orchestration_mode=props.get("orchestrationMode") or "Uniform",
            upgrade_mode=(props.get("upgradePolicy") or {}).get("mode") or "Manual",
            image_id=((vmp.get("storageProfile") or {}).get("imageReference") or {}).get("id"),
        )
        self.apply_model_patch(created, body, replace=True)
        with emu.fleet.lock:
            for inst in created.instances.values():
                inst.applied = created.model
        return self._written(created, 201, self._vmss_body(created))

    def patch_vmss(self, scale_set: ScaleSet, body: JSON) -> Answer:
        self._emu.access.check_linked_image(self._emu.vmss_id(scale_set.resource_group, scale_set.name), body)
        self._emu.spend_budget(scale_set)
        self.apply_model_patch(scale_set, body, replace=False)
        return self._written(scale_set, 200, self._vmss_body(scale_set))

    def apply_model_patch(self, scale_set: ScaleSet, body: JSON, *, replace: bool) -> None:
        """Merge the model parts we keep from a PUT/PATCH body (others are accepted and ignored)."""
        props = body.get("properties") or {}
        vmp = props.get("virtualMachineProfile") or {}
        add = 0
        with self._emu.fleet.lock:
            image_id = scale_set.model.image_id
            image_ref = (vmp.get("storageProfile") or {}).get("imageReference")
            if image_ref is not None:
                image_id = image_ref.get("id") or (None if replace else image_id)
            extensions = scale_set.model.extensions
            ext_profile = vmp.get("extensionProfile")
            if ext_profile is not None and ext_profile.get("extensions") is not None:
                old = {e.name.lower(): e for e in extensions}
                extensions = tuple(
                    extension_from_body(e.get("name", ""), e, old.get(str(e.get("name", "")).lower()), replace=False)
                    for e in ext_profile["extensions"]
                )
            mode = (props.get("upgradePolicy") or {}).get("mode")
            if mode:
                scale_set.upgrade_mode = mode
            scale_set.model = Model(image_id, extensions, scale_set.model.version + 1)
            capacity = (body.get("sku") or {}).get("capacity")
            if capacity is not None and int(capacity) > len(scale_set.instances):
                add = int(capacity) - len(scale_set.instances)
        if add:
            self._emu.scale_out(scale_set.resource_group, scale_set.name, add)

    def extension(self, req: Request, scale_set: ScaleSet, ext_name: str) -> Answer:
        """GET, PUT (replace) or PATCH (merge) one extension of the scale set model."""
        emu = self._emu
        scale_set_id = emu.vmss_id(scale_set.resource_group, scale_set.name)
        with emu.fleet.lock:
            existing = scale_set.find_extension(ext_name)
            kv = emu.semantics.key_vault_reference_in_answers
        if req.method == "GET":
            if existing is None:
                raise ArmError(404, "NotFound", f"Extension '{ext_name}' of '{scale_set.name}' was not found.")
            return 200, {}, existing.to_json(scale_set_id, key_vault_reference=kv)
        if req.method not in ("PUT", "PATCH"):
            raise ArmError(405, "MethodNotAllowed", f"{req.method} is not supported on extensions.")
        if req.method == "PATCH" and existing is None:
            raise ArmError(404, "NotFound", f"Extension '{ext_name}' of '{scale_set.name}' was not found.")
        emu.spend_budget(scale_set)
        new = extension_from_body(ext_name, req.json_body(), existing, replace=req.method == "PUT")
        if not (new.publisher and new.type and new.type_handler_version):
            raise ArmError(400, "InvalidParameter", "publisher, type and typeHandlerVersion are required.")
        self._replace_extension(scale_set, new)
        body: Callable[[], Any] = lambda: new.to_json(scale_set_id, key_vault_reference=kv)  # noqa: E731
        return self._written(scale_set, 201 if existing is None else 200, body)

    def _replace_extension(self, scale_set: ScaleSet, new: Extension) -> None:
        with self._emu.fleet.lock:
            exts = list(scale_set.model.extensions)
            idx = next((i for i, e in enumerate(exts) if e.name.lower() == new.name.lower()), None)
            if idx is None:
                exts.append(new)
            else:
                exts[idx] = new
            scale_set.model = Model(scale_set.model.image_id, tuple(exts), scale_set.model.version + 1)
