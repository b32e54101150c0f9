"""The ARM REST API: the route table and the handlers of every ARM request the emulator answers.

Reads render the fleet's state with ``render``'s pure functions under the fleet's lock; model writes
are in ``writes``; upgrades and reimages start operations on the ``operations.OperationRunner``.

**Long-running operations** answer with ``Azure-AsyncOperation`` (status resource) and ``Location``
(``...&monitor=true``: 202 while running, then 200 with the final resource) plus ``Retry-After``.
``Retry-After`` must be an integer (the SDK deserialises it as ``int``), so a sub-second
``retry_after`` is sent as ``retry-after-ms`` only, which azure-core honours for polling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from emulator.arm import render
from emulator.arm.model import API_VERSION, IMAGE_ID, JSON, ArmError, Instance, Operation, ScaleSet
from emulator.arm.routes import Answer, Request, RouteTable, no_route
from emulator.arm.writes import ModelWrites

if TYPE_CHECKING:
    from emulator.arm.emulator import ArmEmulator

T = TypeVar("T")
ScaleSetHandler = Callable[[ScaleSet, Request, re.Match[str]], Answer]
_SUB = r"/subscriptions/(?P<sub>[^/]+)"
_VMSS = _SUB + r"/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/virtualMachineScaleSets/(?P<name>[^/]+)"
_VM = r"/virtualmachines/(?P<vm>[^/]+)"
_RG = _SUB + r"/resourceGroups/(?P<rg>[^/]+)/providers"
# VirtualMachines_List's one allowed $filter (ComputeRP.json 2026-04-01: "Allowed value is
# 'virtualMachineScaleSet/id' eq /subscriptions/{subId}/resourceGroups/{resourceGroupName}/providers/
# Microsoft.Compute/virtualMachineScaleSets/{vmssName}'"), with the id quoted or, as the spec writes it,
# with only its closing quote.
VM_SCALE_SET_FILTER = re.compile(r"^\s*'virtualMachineScaleSet/id'\s+eq\s+'?(?P<id>[^']+)'\s*$", re.IGNORECASE)

# The $filter values the product's VM listings use, normalised (lower case, single spaces).
VM_FILTERS: dict[str, Callable[[JSON], bool]] = {
    "properties/latestmodelapplied eq true": lambda vm: vm["properties"]["latestModelApplied"] is True,
    "properties/latestmodelapplied eq false": lambda vm: vm["properties"]["latestModelApplied"] is False,
    "startswith(instanceview/statuses/code, 'powerstate') eq true": lambda vm: True,
}


def _require_api_version(query: dict[str, str]) -> None:
    if "api-version" not in query:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )


class ArmApi:
    def __init__(self, emu: ArmEmulator) -> None:
        self._emu = emu
        self._fleet = emu.fleet
        self.writes = ModelWrites(emu, self.lro_headers)
        self.top: RouteTable[Callable[[Request, re.Match[str]], Answer]] = (
            RouteTable[Callable[[Request, re.Match[str]], Answer]]()
            # Azure Monitor (emulator.arm.monitor): Metrics - List under any resource, the Log Analytics query.
            .add("GET", _SUB + r"(?P<resource_path>/.+?)/providers/Microsoft\.Insights/metrics", emu.monitor.metrics)
            .add("POST", r"/v1/workspaces/(?P<workspace>[^/]+)/query", emu.monitor.logs_query)
            .add(
                "GET", _SUB + r"/providers/Microsoft\.Compute/locations/[^/]+/operations/(?P<op>[^/]+)", self._operation
            )
            .add("GET", IMAGE_ID.pattern.strip("^$"), self._image)
            .add("GET", _SUB + r"/providers/Microsoft\.Compute/virtualMachineScaleSets/?", self._list_all_scale_sets)
            .add("GET", _RG + r"/Microsoft\.Compute/virtualMachines", self._list_flexible_vms)
            .add("*", _RG + r"/Microsoft\.Compute/virtualMachines/(?P<vm>[^/]+)(?P<rest>/.*)?", self._flexible_vm)
            .add("GET", _RG + r"/Microsoft\.Network/networkInterfaces", self._list_rg_nics)
            .add("GET", _RG + r"/Microsoft\.Network/networkInterfaces/(?P<nic>[^/]+)", self._get_rg_nic)
            .add("*", _VMSS + r"(?P<rest>/.*)?", self._scale_set_request)
        )
        # Paths below a scale set ("" = the scale set); PUT "" creates, so it needs no existing one.
        self.scale_set_routes: RouteTable[ScaleSetHandler] = (
            RouteTable[ScaleSetHandler]()
            .add("GET", r"", lambda ss, req, m: (200, {}, self.scale_set_json(ss)))
            .add("PATCH", r"", lambda ss, req, m: self.writes.patch_vmss(ss, req.json_body()))
            .add("GET", r"/instanceview", lambda ss, req, m: (200, {}, self._locked(render.vmss_instance_view, ss)))
            .add("POST", r"/manualupgrade", self._manualupgrade)
            .add("POST", r"/reimage", self._reimage)
            .add("GET", r"/extensions", self._list_extensions)
            .add("*", r"/extensions/(?P<ext>[^/]+)", lambda ss, req, m: self.writes.extension(req, ss, m["ext"]))
            .add("GET", r"/virtualmachines", self._list_vms)
            .add("GET", _VM, self._get_vm)
            .add("GET", _VM + r"/instanceview", self._get_vm_instance_view)
            .add("POST", _VM + r"/reimage", self._reimage_vm)
            .add("*", _VM + r"(/.*)?", self._no_vm_route)  # a missing instance is 404 NotFound first
            .add("GET", r"/networkinterfaces", self._list_nics)
        )

    def dispatch(self, req: Request) -> Answer:
        found = self.top.find(req.method, req.path)
        if found is None:
            raise no_route(req.method, req.path)
        handler, m = found
        return handler(req, m)

    # -- long-running operations -----------------------------------------------------------------------
    def retry_after_headers(self) -> dict[str, str]:
        retry_after = self._emu.retry_after
        if retry_after >= 1:
            return {"Retry-After": str(int(math.ceil(retry_after)))}
        return {"retry-after-ms": str(max(1, int(retry_after * 1000)))}

    def lro_headers(self, op: Operation) -> dict[str, str]:
        sub = self._emu.subscription_id
        base = f"{self._emu.url}/subscriptions/{sub}/providers/Microsoft.Compute/locations/{op.location}"
        status_url = f"{base}/operations/{op.op_id}?api-version={API_VERSION}"
        headers = {"Azure-AsyncOperation": status_url, "Location": f"{status_url}&monitor=true"}
        headers.update(self.retry_after_headers())
        return headers

    def _operation(self, req: Request, m: re.Match[str]) -> Answer:
        with self._fleet.lock:
            op = self._emu.operations.get(m["op"])
            if "monitor" not in req.query:
                return 200, (self.retry_after_headers() if op.ended is None else {}), render.operation_status_json(op)
            if op.ended is None:
                return 202, self.lro_headers(op), None
            if op.failures:
                # ARMPolling never gets here (the status resource already said Failed); a
                # Location-only client sees the failure as an error answer.
                raise ArmError(
                    409,
                    "VMExtensionProvisioningError",
                    f"Extension failed on instance(s) {', '.join(sorted(op.failures))}.",
                )
            return 200, {}, op.result() if op.result else None

    def _image(self, req: Request, m: re.Match[str]) -> Answer:
        _require_api_version(req.query)
        return 200, {}, self._emu.access.get(req.path.rstrip("/"), m)

    def _list_all_scale_sets(self, req: Request, m: re.Match[str]) -> Answer:
        """VirtualMachineScaleSets_ListAll: every scale set of the subscription, paged (``nextLink``), in a
        VirtualMachineScaleSetListWithLinkResult (``value``, ``nextLink``). The caller needs
        Microsoft.Compute/virtualMachineScaleSets/read at the subscription: with ``readable_scopes`` set and
        none of them covering ``/subscriptions/<id>``, 403 AuthorizationFailed (the shape ImageAccess uses)."""
        if m["sub"].lower() != self._emu.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
        _require_api_version(req.query)
        scope = f"/subscriptions/{m['sub']}"
        if not self._emu.access.can_read(scope):
            caller = self._emu.access.caller_id
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{caller}' with object id '{caller}' does not have authorization to perform action "
                f"'Microsoft.Compute/virtualMachineScaleSets/read' over scope '{scope}' or the scope is invalid. "
                "If access was recently granted, please refresh your credentials.",
            )
        with self._fleet.lock:
            scale_sets = sorted(self._fleet.scale_sets(), key=lambda ss: (ss.resource_group.lower(), ss.name.lower()))
            kv = self._emu.semantics.key_vault_reference_in_answers
            items = [render.vmss_json(ss, self._emu.subscription_id, key_vault_reference=kv) for ss in scale_sets]
        return 200, {}, self._page(items, req)

    # -- the scale set and below ---------------------------------------------------------------------
    def _scale_set_request(self, req: Request, m: re.Match[str]) -> Answer:
        if m["sub"].lower() != self._emu.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
        _require_api_version(req.query)
        rg, name, rest = m["rg"], m["name"], (m["rest"] or "").rstrip("/")
        if rest == "" and req.method == "PUT":
            return self.writes.put_vmss(rg, name, req.json_body())
        scale_set = self._fleet.get(rg, name)
        found = self.scale_set_routes.find(req.method, rest)
        if found is None:
            raise no_route(req.method, req.path)
        handler, sub_match = found
        if scale_set.flexible and re.match(r"/(virtualmachines|networkinterfaces)(/|$)", rest, re.IGNORECASE):
            # A Flexible scale set's instances are standalone VMs with standalone NICs, reached through
            # the VM and NIC APIs; the scale set VM APIs are Uniform's (orchestration-modes-api-comparison.md).
            # The emulator refuses them so that a client using them on a Flexible scale set shows.
            raise ArmError(
                400,
                "OperationNotAllowed",
                f"'{scale_set.name}' uses Flexible orchestration: its virtual machines are "
                "Microsoft.Compute/virtualMachines resources; use the virtual machine APIs.",
            )
        return handler(scale_set, req, sub_match)

    def _locked(self, fn: Callable[[ScaleSet], JSON], scale_set: ScaleSet) -> JSON:
        with self._fleet.lock:
            return fn(scale_set)

    def scale_set_json(self, scale_set: ScaleSet) -> JSON:
        with self._fleet.lock:
            kv = self._emu.semantics.key_vault_reference_in_answers
            return render.vmss_json(scale_set, self._emu.subscription_id, key_vault_reference=kv)

    def _upgrade(self, scale_set: ScaleSet, ids: list[Any], *, reimage: bool) -> Answer:
        self._emu.spend_budget(scale_set)
        op = self._emu.operations.start_upgrades(scale_set, [str(i) for i in ids], reimage=reimage)
        return 202, self.lro_headers(op), None

    def _manualupgrade(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        ids = req.json_body().get("instanceIds")
        if not isinstance(ids, list) or not ids:
            raise ArmError(400, "InvalidParameter", "instanceIds is required for manualupgrade.")
        return self._upgrade(scale_set, ids, reimage=False)

    def _reimage(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        return self._upgrade(scale_set, req.json_body().get("instanceIds") or list(scale_set.instances), reimage=True)

    def _reimage_vm(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        inst = self._fleet.get_instance(scale_set, m["vm"])
        return self._upgrade(scale_set, [inst.instance_id], reimage=True)

    def _list_extensions(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        scale_set_id = self._emu.vmss_id(scale_set.resource_group, scale_set.name)
        with self._fleet.lock:
            kv = self._emu.semantics.key_vault_reference_in_answers
            value = [e.to_json(scale_set_id, key_vault_reference=kv) for e in scale_set.model.extensions]
        return 200, {}, {"value": value}

    def _vm_json(self, scale_set: ScaleSet, inst: Instance, *, instance_view: bool) -> JSON:
        with self._fleet.lock:
            latest = self._emu.semantics.latest(scale_set, inst)
            sub = self._emu.subscription_id
            return render.vm_json(scale_set, inst, sub, latest=latest, instance_view=instance_view)

    def _get_vm(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        inst = self._fleet.get_instance(scale_set, m["vm"])
        return 200, {}, self._vm_json(scale_set, inst, instance_view=req.query.get("$expand", "") == "instanceView")

    def _get_vm_instance_view(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        with self._fleet.lock:
            return 200, {}, render.vm_instance_view(scale_set, self._fleet.get_instance(scale_set, m["vm"]))

    def _no_vm_route(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        self._fleet.get_instance(scale_set, m["vm"])
        raise no_route(req.method, req.path)

    def _list_vms(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        expand = req.query.get("$expand", "")
        select = req.query.get("$select", "")
        if expand and expand != "instanceView":
            raise ArmError(400, "InvalidParameter", f"The value '{expand}' of $expand is not supported.")
        if select and select not in ("instanceView", "instanceView/statuses"):
            raise ArmError(400, "InvalidParameter", f"The value '{select}' of $select is not supported.")
        flt = req.query.get("$filter", "")
        predicate: Callable[[JSON], bool] | None = None
        if flt:
            norm = re.sub(r"\s+", " ", flt.strip().lower())
            if norm not in VM_FILTERS:
                raise ArmError(400, "InvalidParameter", f"The $filter '{flt}' is not supported.")
            predicate = VM_FILTERS[norm]
        with self._fleet.lock:
            insts = scale_set.instances_in_order()

        def one(inst: Instance) -> JSON:
            vm = self._vm_json(scale_set, inst, instance_view=bool(expand or select))
            if select == "instanceView/statuses":
                vm["properties"]["instanceView"] = {"statuses": vm["properties"]["instanceView"]["statuses"]}
            return vm

        if predicate is None:  # no $filter: only the page's VMs are rendered
            return 200, {}, self._page(insts, req, one)
        return 200, {}, self._page([vm for vm in map(one, insts) if predicate(vm)], req)

    # -- Flexible orchestration: standalone VMs and NICs of the resource group ------------------------------
    def _check_subscription(self, req: Request, m: re.Match[str]) -> None:
        if m["sub"].lower() != self._emu.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{m['sub']}' could not be found.")
        _require_api_version(req.query)

    def _flex_vm_json(self, scale_set: ScaleSet, inst: Instance, *, instance_view: bool) -> JSON:
        with self._fleet.lock:
            latest: bool | None = None
            if self._emu.semantics.flexible_model_applied == "in_vm_list":
                latest = self._emu.semantics.latest(scale_set, inst)
            return render.flex_vm_json(
                scale_set, inst, self._emu.subscription_id, latest=latest, instance_view=instance_view
            )

    def _list_flexible_vms(self, req: Request, m: re.Match[str]) -> Answer:
        """VirtualMachines_List: the resource group's VMs (here: Flexible scale sets' instances), with
        ``$filter`` on the scale set and ``$expand=instanceView``, which the spec allows only with a
        valid ``$filter``. Paged like every list."""
        self._check_subscription(req, m)
        expand, flt = req.query.get("$expand", ""), req.query.get("$filter", "")
        if expand and expand.lower() != "instanceview":
            raise ArmError(400, "InvalidParameter", f"The value '{expand}' of $expand is not supported.")
        wanted: str | None = None
        if flt:
            found = VM_SCALE_SET_FILTER.match(flt)
            if found is None:
                raise ArmError(400, "InvalidParameter", f"The $filter '{flt}' is not supported.")
            wanted = found["id"].strip().lower()
        elif expand:
            raise ArmError(
                400, "InvalidParameter", "$expand=instanceView can only be specified with a valid $filter option."
            )
        sub = self._emu.subscription_id
        with self._fleet.lock:
            members = [
                (s, i)
                for s in self._fleet.flexible_sets_in(m["rg"])
                if wanted is None or render.vmss_id(sub, s.resource_group, s.name).lower() == wanted
                for i in s.instances_in_order()
            ]
        return 200, {}, self._page(members, req, lambda member: self._flex_vm_json(*member, instance_view=bool(expand)))

    def _flexible_vm(self, req: Request, m: re.Match[str]) -> Answer:
        """One Flexible VM: GET (``$expand=instanceView``), GET instanceView, POST reimage."""
        self._check_subscription(req, m)
        scale_set, inst = self._fleet.flexible_vm(m["rg"], m["vm"])
        rest = (m["rest"] or "").rstrip("/").lower()
        if req.method == "GET" and rest == "":
            expand = req.query.get("$expand", "").lower() == "instanceview"
            return 200, {}, self._flex_vm_json(scale_set, inst, instance_view=expand)
        if req.method == "GET" and rest == "/instanceview":
            with self._fleet.lock:
                return 200, {}, render.flex_vm_instance_view(scale_set, inst)
        if req.method == "POST" and rest == "/reimage":
            # VirtualMachines_Reimage: the Flexible alternative to the scale set's reimage
            # (orchestration-modes-api-comparison.md); it spends the scale set's write budget like the
            # scale-set-wide calls (the emulator's choice: Compute's per-VM limits are not modelled).
            return self._upgrade(scale_set, [inst.instance_id], reimage=True)
        raise no_route(req.method, req.path)

    def _list_rg_nics(self, req: Request, m: re.Match[str]) -> Answer:
        """NetworkInterfaces_List of a resource group: the Flexible VMs' standalone NICs (a Uniform
        scale set's NICs are listed under the scale set, not here)."""
        self._check_subscription(req, m)
        sub = self._emu.subscription_id
        with self._fleet.lock:
            members = [(s, i) for s in self._fleet.flexible_sets_in(m["rg"]) for i in s.instances_in_order()]
            nics = self._page(members, req, lambda member: render.nic_json(*member, sub))
        return 200, {}, nics

    def _get_rg_nic(self, req: Request, m: re.Match[str]) -> Answer:
        self._check_subscription(req, m)
        sub = self._emu.subscription_id
        with self._fleet.lock:
            for s in self._fleet.flexible_sets_in(m["rg"]):
                for i in s.instances_in_order():
                    nic = render.nic_json(s, i, sub)
                    if nic["name"].lower() == m["nic"].lower():
                        return 200, {}, nic
        raise ArmError(
            404, "NotFound", f"Resource Microsoft.Network/networkInterfaces/{m['nic']} not found in {m['rg']}."
        )

    def _list_nics(self, scale_set: ScaleSet, req: Request, m: re.Match[str]) -> Answer:
        sub = self._emu.subscription_id
        with self._fleet.lock:
            nics = self._page(scale_set.instances_in_order(), req, lambda i: render.nic_json(scale_set, i, sub))
        return 200, {}, nics

    def _page(self, items: Sequence[T], req: Request, one: Callable[[T], JSON] | None = None) -> JSON:
        """One page of ``items``; ``one`` renders each item of that page alone."""
        return render.page(
            items, req.path, req.query, page_size=self._emu.page_size, base_url=self._emu.url, render=one
        )
