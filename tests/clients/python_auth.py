"""python3-etcd3 with auth: sets up a user and a role through the Auth service's stubs, enables auth, and checks that
Authenticate (client(user=, password=)) gives a token that the KV calls carry and that permissions hold.
python3-etcd3 sends its token as call credentials, which gRPC only sends over TLS: the server runs with --auto-tls.
Usage: python_auth.py HOST PORT CA_CERT. Prints what it observed as JSON; exits 1 on a failed assertion."""
import json
import sys

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import auth_pb2


def rpc_error(fn):
    try:
        fn()
    except Exception as e:  # etcd3 wraps some gRPC errors; keep the message
        return str(e) + " " + (e.details() if hasattr(e, "details") else "")
    raise AssertionError("call was expected to fail")


def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    c = etcd3.client(host, port, timeout=10, ca_cert=ca)
    a = etcdrpc.AuthStub(c.channel)
    no_root = rpc_error(lambda: a.AuthEnable(etcdrpc.AuthEnableRequest(), 10))
    assert "etcdserver: root user does not exist" in no_root, no_root
    a.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password="rootpw"), 10)
    no_role = rpc_error(lambda: a.AuthEnable(etcdrpc.AuthEnableRequest(), 10))
    assert "etcdserver: root user does not have root role" in no_role, no_role
    a.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), 10)
    a.RoleAdd(etcdrpc.AuthRoleAddRequest(name="py"), 10)
    perm = auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"py/", range_end=b"py0")
    a.RoleGrantPermission(etcdrpc.AuthRoleGrantPermissionRequest(name="py", perm=perm), 10)
    a.UserAdd(etcdrpc.AuthUserAddRequest(name="pyuser", password="pypw"), 10)
    a.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="pyuser", role="py"), 10)
    a.AuthEnable(etcdrpc.AuthEnableRequest(), 10)
    anonymous = rpc_error(lambda: c.put("py/a", "1"))
    assert "user name is empty" in anonymous, anonymous
    c.close()

    u = etcd3.client(host, port, timeout=10, ca_cert=ca, user="pyuser", password="pypw")
    u.put("py/a", "1")
    value, _ = u.get("py/a")
    assert value == b"1", value
    denied = rpc_error(lambda: u.put("other", "x"))
    assert "permission denied" in denied, denied
    denied_read = rpc_error(lambda: u.get("other"))
    assert "permission denied" in denied_read, denied_read
    u.close()

    bad = rpc_error(lambda: etcd3.client(host, port, timeout=10, ca_cert=ca, user="pyuser", password="wrong"))
    assert "authentication failed, invalid user ID or password" in bad, bad

    r = etcd3.client(host, port, timeout=10, ca_cert=ca, user="root", password="rootpw")
    r.put("other", "by root")
    ra = etcdrpc.AuthStub(r.channel)
    users = list(ra.UserList(etcdrpc.AuthUserListRequest(), 10, metadata=r.metadata).users)
    ra.AuthDisable(etcdrpc.AuthDisableRequest(), 10, metadata=r.metadata)
    r.close()
    print(json.dumps({"users": users, "anonymous": anonymous.strip(), "denied": denied.strip()}))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"assertion failed: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        print(f"rpc failed: {e}", file=sys.stderr)
        sys.exit(1)
