//! containerd's filter language (`name==x,labels."a.b"~=re`).
